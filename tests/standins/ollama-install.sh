#!/bin/sh
# Stand-in for Ollama's install script (https://ollama.com/install.sh), served to test hosts by
# a real HTTP server. Like the real one it installs the release OLLAMA_VERSION names (else the
# newest, whose version the test writes in place of @LATEST@), writes its own systemd unit and
# restarts the service; here the "release" is the Ollama stand-in (stashed on the host at
# /usr/local/lib/standins/ollama), installed as /usr/local/bin/ollama with its version next to
# it. Every run is logged to /var/log/ollama-install.log.
set -eu
V=${OLLAMA_VERSION:-@LATEST@}
case $V in *[!0-9.rc-]*|'') echo "no such Ollama release: $V" >&2; exit 1;; esac
[ "$(id -u)" = 0 ] || { echo "the installer needs root" >&2; exit 1; }
echo ">>> Installing ollama $V to /usr/local"
cp /usr/local/lib/standins/ollama /usr/local/bin/ollama.new
chmod 755 /usr/local/bin/ollama.new
printf '%s\n' "$V" > /usr/local/bin/ollama.version
mv -f /usr/local/bin/ollama.new /usr/local/bin/ollama
echo "install $V" >> /var/log/ollama-install.log
if command -v systemctl >/dev/null 2>&1; then
  echo ">>> Creating ollama systemd service..."
  printf '[Unit]\nDescription=Ollama Service (installer)\n[Service]\nExecStart=/usr/local/bin/ollama serve\n[Install]\nWantedBy=default.target\n' > /etc/systemd/system/ollama.service
  systemctl daemon-reload
  systemctl enable ollama
  systemctl restart ollama
fi
echo ">>> Install complete."
