"""The command-line layer: argparse, one function per command, errors as one line and an exit code."""
