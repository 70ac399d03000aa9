"""Runs localstripe, a Stripe-compatible test server, on the loopback interface only.

Its own command binds every interface; tests need nothing beyond 127.0.0.1.
Usage: python3 scripts/run_localstripe.py [PORT]   (default 8420)
"""

import sys

from aiohttp import web
from localstripe.server import app

port = int(sys.argv[1]) if len(sys.argv) > 1 else 8420
web.run_app(app, host="127.0.0.1", port=port, print=None)
