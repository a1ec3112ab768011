"""Flags shared by the HTTP clients in loadtests/."""

from __future__ import annotations

import argparse

DEFAULT_URL = "http://127.0.0.1:3000"


def url_parser(prog: str, doc: str) -> argparse.ArgumentParser:
    """An argparse parser with --url, the module docstring's first line as description, defaults shown."""
    parser = argparse.ArgumentParser(
        prog=prog, description=doc.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--url", default=DEFAULT_URL, help="base URL of the service")
    return parser
