# hpaweb: `make run` serves the app with a worker; `make test` runs the test suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
export DJANGO_SETTINGS_MODULE ?= hpaweb.settings.local

.PHONY: run setup venv test test-slow screenshots bench migrate lint format clean

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install -r requirements.txt
	$(VENV)/bin/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# The HPA post-processing's flooding loop; without a C compiler it falls back to scikit-image's
# own loop (same labels, about 1.6 times slower).
FLOOD_LIB := ml/segmentation/hpa/_flood.so
$(FLOOD_LIB): ml/segmentation/hpa/_flood.c
	$(CC) -O2 -shared -fPIC -o $@ $< || echo "No C compiler: the HPA post-processing uses scikit-image's loop."

# The LBP histogram of the cell measurements (scikit-image's codes, counted in C without the GIL);
# without a C compiler the same histograms come from NumPy, about three times slower. No fused
# multiply-adds: they would round the interpolation differently from scikit-image.
LBP_LIB := ml/measure/_lbp.so
$(LBP_LIB): ml/measure/_lbp.c
	$(CC) -O3 -ffp-contract=off -shared -fPIC -o $@ $< || echo "No C compiler: the LBP histograms come from NumPy."

# axe-core (npm registry, pinned in package-lock.json) for the browser tests' accessibility checks,
# served by the app's own static files (never a CDN).
AXE_JS := static/vendor/axe.min.js
node_modules/axe-core/axe.min.js: package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@
$(AXE_JS): node_modules/axe-core/axe.min.js
	mkdir -p $(@D)
	cp $< $@

venv: $(VENV)/.installed $(FLOOD_LIB) $(LBP_LIB) $(AXE_JS)

setup: venv
	mkdir -p var
	$(PY) manage.py migrate --noinput
	$(PY) manage.py collectstatic --noinput --verbosity 0
	$(PY) manage.py ensure_admin

# The web server and one Celery worker (with Celery beat inside it, for the sweeper of cells.sweeper).
# INT (Ctrl-C) or TERM stops both, as does either one ending: TERM to each, then after 10 s a cold
# shutdown of the worker (a field it was running is queued again by the sweeper) and KILL of the web server.
run: setup
	@echo "hpaweb on http://$(HOST):$(PORT)/ (sign-in details: var/admin-password.txt)"
	@$(VENV)/bin/celery -A hpaweb worker -B --loglevel=INFO --concurrency=$(WORKERS) --hostname=hpaweb@%h & worker=$$!; \
	$(VENV)/bin/gunicorn hpaweb.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --timeout 300 --graceful-timeout 10 --access-logfile - & web=$$!; \
	stop() { \
	  trap '' INT TERM; \
	  kill -TERM $$web $$worker 2>/dev/null; \
	  tenths=0; \
	  while [ $$tenths -lt 100 ] && { kill -0 $$web || kill -0 $$worker; } 2>/dev/null; do sleep 0.1; tenths=$$((tenths + 1)); done; \
	  kill -QUIT $$worker 2>/dev/null; kill -KILL $$web 2>/dev/null; \
	  wait; \
	}; \
	trap 'stop; exit 130' INT; trap 'stop; exit 143' TERM; \
	while kill -0 $$web 2>/dev/null && kill -0 $$worker 2>/dev/null; do sleep 0.5; done; \
	stop

test: venv
	DJANGO_SETTINGS_MODULE=hpaweb.settings.test $(PY) -m pytest -q

test-slow: venv
	DJANGO_SETTINGS_MODULE=hpaweb.settings.test $(PY) -m pytest -q -m slow

# The browser tests write their screenshots under var/screenshots; this refreshes the README's.
screenshots: venv
	HPAWEB_SCREENSHOTS_DIR=$(CURDIR)/docs/screenshots DJANGO_SETTINGS_MODULE=hpaweb.settings.test $(PY) -m pytest -q -m browser

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: venv
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: venv
	$(PY) -m bench

migrate: venv
	$(PY) manage.py migrate --noinput

clean:
	rm -rf var
