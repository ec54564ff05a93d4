import os
import threading

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "embedhub.settings")
application = get_wsgi_application()


def _warm() -> None:
    # scipy.stats takes about 1.7 s to import on a 2-core machine; the comparison page (paired
    # tests) would otherwise pay it on its first open in each web process.
    import scipy.stats  # noqa: F401


threading.Thread(target=_warm, name="warm-imports", daemon=True).start()
