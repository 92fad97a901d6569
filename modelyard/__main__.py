from modelyard.cli import main

raise SystemExit(main())
