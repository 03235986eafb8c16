from layrot.cli import main

raise SystemExit(main())
