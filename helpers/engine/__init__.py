"""The course's machinery: what keeps a training run whole, resumable and shareable. Not needed to teach; see
README.md here. The lessons reach it through two doors only: `helpers.runs` (train_or_load, Run) and the CLI."""
