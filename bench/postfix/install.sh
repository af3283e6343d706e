#!/usr/bin/env bash
# Installs Debian's postfix package (the relay and its smtp-source load generator) for
# `npm run bench -- --compare postfix`, if it is not there yet.
#
# debconf is preseeded with "No configuration": the package then writes no /etc/postfix/main.cf
# and starts no system Postfix, so nothing listens on port 25 because of this script. The bench
# runs its own instance from a temp config dir and never reads or changes the system one.
set -euo pipefail

# Both live in /usr/sbin, which a non-root PATH often lacks.
export PATH="$PATH:/usr/sbin:/usr/local/sbin"
if command -v smtp-source >/dev/null 2>&1 && command -v postfix >/dev/null 2>&1; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "postfix is not installed and installing it needs root: run 'sudo $0'" >&2
  exit 1
fi

echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
export DEBIAN_FRONTEND=noninteractive
# Another apt run on the machine may hold the dpkg lock: wait for it (bounded) instead of failing.
install() { apt-get install -y -qq -o DPkg::Lock::Timeout=300 postfix >/dev/null; }
# A fresh container has no package lists yet: fetch them only when the first attempt needs them.
install || { apt-get update -qq -o DPkg::Lock::Timeout=300 && install; }
