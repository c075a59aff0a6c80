"""The runbook actions, one module per sub-command family. None of them imports Slack.

Each module makes a `CommandSet`; the family's registration (bot/<family>/family.py, or the
`family` at the end of a module that is a family on its own) hands it to the composition
root (bot/app.py), which builds the registry."""
