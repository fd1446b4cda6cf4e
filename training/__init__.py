"""Training and evaluation command-line tools (`python -m training.<tool> --help`)."""
