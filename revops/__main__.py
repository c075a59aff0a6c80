from revops.bot.cli import main

raise SystemExit(main())
