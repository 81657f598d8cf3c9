"""The screen pipeline. Sharing: capture (grab) -> damage (what changed) -> tiles (change map)
-> encoders (scroll as copy rects, video for the region that always moves, simulcast's low
layer) -> sharing (sends frames; resume keeps it going). Watching: codec's Canvas applies them;
viewer shows it."""
