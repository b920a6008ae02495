from procfs.cli import main

raise SystemExit(main())
