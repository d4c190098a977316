"""`python -m maskedit ...`: see `maskedit.cli`."""

from maskedit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
