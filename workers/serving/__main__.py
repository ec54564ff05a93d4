import logging

from workers.serving.server import bind_address, serve

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
serve(*bind_address())
