from chatscreen.cli import main

raise SystemExit(main())
