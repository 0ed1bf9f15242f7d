from logwatchd.cli import main

raise SystemExit(main())
