# Sourced by the install scripts: apt_install WHO HINT PACKAGE... installs Debian packages with apt, as root or
# through sudo, quietly. WHO names the caller in messages; HINT says what to do where apt-get is missing.
apt_install() {
  local who=$1 hint=$2
  shift 2
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "${who}: apt-get not found; ${hint}" >&2
    return 1
  fi
  local sudo=()
  if [ "$(id -u)" != 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "${who}: need root to install $*; run as root:" >&2
      echo "  apt-get update && apt-get install -y --no-install-recommends $*" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "${who}: installing $* (apt)" >&2
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
