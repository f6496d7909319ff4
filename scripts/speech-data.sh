#!/usr/bin/env bash
# Install the real recorded speech that `voxcart bench speech` scores the recognizer on (speech.md §5):
#   asterisk-core-sounds-en-wav  568 studio prompts, one female voice, 8 kHz 16-bit WAV (CC-BY-SA-3.0)
#   asterisk-core-sounds-en      the transcripts: /usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
# Debian/Ubuntu only (apt). Safe to run again: it installs only what is missing.
set -euo pipefail
# shellcheck source=apt-install.sh
source "$(dirname "$0")/apt-install.sh"

WAV_DIR=/usr/share/asterisk/sounds/en_US_f_Allison
TRANSCRIPTS=/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz
PACKAGES=(asterisk-core-sounds-en-wav asterisk-core-sounds-en)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  apt_install speech-data "this data comes from Debian packages: ${missing[*]}
  on another system, copy ${WAV_DIR} and ${TRANSCRIPTS} from a Debian machine" "${missing[@]}"
fi

if [ ! -d "$WAV_DIR" ] || [ ! -f "$TRANSCRIPTS" ]; then
  echo "speech-data: installed, but ${WAV_DIR} or ${TRANSCRIPTS} is missing; the packages' layout changed?" >&2
  exit 1
fi
count=$(find "$WAV_DIR" -name '*.wav' | wc -l)
echo "speech-data: ${count} prompts in ${WAV_DIR}, transcripts in ${TRANSCRIPTS}"
