"""python -m workers.serving [--bind HOST:PORT] [--token-file PATH]

Settings come from the environment (SEARCH_BIND, SEARCH_URL, SEARCH_TOKEN, SEARCH_TOKEN_FILE,
SEARCH_MANIFEST, VAR_DIR, ARTIFACTS_ROOT); a flag wins over its variable. The token is never a
flag: a command line is readable by every user of the machine."""

import argparse
import logging
import sys

from workers.serving.auth import MIN_LENGTH, TokenError, resolve_token
from workers.serving.server import bind_address, serve

parser = argparse.ArgumentParser(
    prog="python -m workers.serving", description=__doc__.split("\n")[0]
)
parser.add_argument("--bind", help="HOST:PORT to listen on (default SEARCH_BIND, else 127.0.0.1)")
parser.add_argument("--token-file", help="file holding the shared secret (SEARCH_TOKEN_FILE)")
args = parser.parse_args()

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
logger = logging.getLogger("embedhub.search")
try:
    token, source = resolve_token(token_file=args.token_file)
except (TokenError, OSError) as exc:
    sys.exit(f"search process: no usable token: {exc}")
logger.info("requests need the token from %s", source)
if len(token) < MIN_LENGTH:
    logger.warning(
        "the search token is shorter than %d characters: use a long random one", MIN_LENGTH
    )
serve(*bind_address(args.bind), token)
