from streaming.cli import main

raise SystemExit(main())
