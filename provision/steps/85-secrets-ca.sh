#!/bin/bash
# The guest's secrets CA (lib/secret-proxy.py): made once, an EC key that never leaves root and its
# certificate, which envs with secrets trust (and no other). bundle.pem, the system's CA bundle and the CA's
# certificate, is what those envs' SSL_CERT_FILE names: made again at every provisioning. It runs after
# 80-packages.sh, which may be what installs openssl.
set -euo pipefail
dir=/etc/llima-box/secrets-ca
if ! command -v openssl >/dev/null; then
	echo "llima-box-provision: openssl is missing (apt-get install openssl): envs cannot have secrets" >&2
	exit 0
fi
install -d -m 0755 -o root -g root /etc/llima-box "$dir"
if [[ ! -s $dir/ca.key || ! -s $dir/ca.crt ]]; then
	rm -f "$dir/ca.key.new" "$dir/ca.crt.new"
	(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key.new" 2>/dev/null)
	openssl req -x509 -new -key "$dir/ca.key.new" -subj "/CN=llima-box secrets CA ($(hostname))" -days 3650 \
		-sha256 -addext "basicConstraints=critical,CA:TRUE,pathlen:0" -addext "keyUsage=critical,keyCertSign,cRLSign" \
		-out "$dir/ca.crt.new" 2>/dev/null
	chmod 0644 "$dir/ca.crt.new"
	mv -f "$dir/ca.key.new" "$dir/ca.key"
	mv -f "$dir/ca.crt.new" "$dir/ca.crt"
fi
chown root:root "$dir/ca.key" "$dir/ca.crt"
chmod 0600 "$dir/ca.key"
chmod 0644 "$dir/ca.crt"
system=/etc/ssl/certs/ca-certificates.crt
[[ -r $system ]] || system=/dev/null
cat "$system" "$dir/ca.crt" >"$dir/bundle.pem.new"
chmod 0644 "$dir/bundle.pem.new"
mv -f "$dir/bundle.pem.new" "$dir/bundle.pem"
