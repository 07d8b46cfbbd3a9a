from anytime_reasoner.cli import main

raise SystemExit(main())
