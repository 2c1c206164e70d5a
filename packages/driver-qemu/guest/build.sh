#!/usr/bin/env bash
# Builds Shoal's QEMU test guest (vmlinuz, initrd.img, guest.json) from Debian packages.
#   bash build.sh [OUT_DIR]
# Default OUT_DIR: ${SHOAL_GUEST_DIR:-$HOME/.cache/shoal/guest}/<key>, key = first 16 hex of the
# sha256 over build.sh, shoal-guest.c and init. Prints OUT_DIR as the last stdout line; everything
# else goes to stderr. A complete OUT_DIR (guest.json present) is reused as it is.
set -Eeuo pipefail
exec 3>&1 1>&2

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STEP="start"
WORK=""
STAGE=""
step () { STEP="$1"; echo "shoal-guest build: $1" >&2; }
die () { echo "shoal-guest build: FAILED at step '$STEP': $*" >&2; exit 1; }
cleanup () {
	[ -n "$WORK" ] && rm -rf "$WORK"
	[ -n "$STAGE" ] && rm -rf "$STAGE"
	return 0
}
trap 'rc=$?; echo "shoal-guest build: FAILED at step '"'"'$STEP'"'"' (exit $rc, line $LINENO: $BASH_COMMAND)" >&2; exit $rc' ERR
trap cleanup EXIT

step "cache key"
for f in build.sh shoal-guest.c init; do [ -f "$HERE/$f" ] || die "missing $HERE/$f"; done
KEY="$(cat "$HERE/build.sh" "$HERE/shoal-guest.c" "$HERE/init" | sha256sum | cut -c1-16)"
if [ $# -ge 1 ] && [ -n "$1" ]; then
	OUT="$1"
else
	OUT="${SHOAL_GUEST_DIR:-$HOME/.cache/shoal/guest}/$KEY"
fi
mkdir -p "$(dirname "$OUT")"
OUT="$(cd "$(dirname "$OUT")" && pwd)/$(basename "$OUT")"
if [ -f "$OUT/guest.json" ]; then
	echo "shoal-guest build: cached in $OUT" >&2
	echo "$OUT" >&3
	exit 0
fi
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ]; then
	die "$OUT exists but holds no complete build (no guest.json): remove it"
fi

step "tools"
export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0
apt_update () {
	[ "$APT_UPDATED" = 1 ] && return 0
	apt-get update -q >&2 || die "apt-get update failed"
	APT_UPDATED=1
}
need_pkgs=()
for p in gcc libc6-dev busybox-static cpio gzip xz-utils; do
	[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
	[ "$(id -u)" = 0 ] || die "missing packages ${need_pkgs[*]} and not root: install them with apt-get"
	echo "shoal-guest build: installing ${need_pkgs[*]}" >&2
	apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2 ||
		{ apt_update; apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2; } ||
		die "apt-get install ${need_pkgs[*]} failed"
fi
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX (busybox-static) not found"
file_is_static () { ! LC_ALL=C readelf -l "$1" 2>/dev/null | grep -q 'INTERP'; }
command -v readelf >/dev/null && { file_is_static "$BUSYBOX" || die "$BUSYBOX is not static (install busybox-static)"; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/shoal-guest-build.XXXXXX")"
chmod 755 "$WORK"

step "resolve kernel package"
resolve_kernel () {
	apt-cache depends linux-image-cloud-amd64 2>/dev/null |
		sed -n 's/^ *Depends: *\(linux-image-[0-9][^ ]*-cloud-amd64\) *$/\1/p' | head -n1
}
KPKG="$(resolve_kernel || true)"
if [ -z "$KPKG" ]; then apt_update; KPKG="$(resolve_kernel || true)"; fi
[ -n "$KPKG" ] || die "cannot resolve the linux-image-*-cloud-amd64 package that linux-image-cloud-amd64 depends on"
echo "shoal-guest build: kernel package $KPKG" >&2

step "download kernel package"
(cd "$WORK" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >&2) ||
	{ apt_update; (cd "$WORK" && apt-get download -q -o APT::Sandbox::User=root "$KPKG" >&2); } ||
	die "apt-get download $KPKG failed"
DEB="$(ls "$WORK"/"$KPKG"_*.deb | head -n1)"
KPKG_VERSION="$(dpkg-deb -f "$DEB" Version)"

step "extract kernel package"
mkdir "$WORK/k"
dpkg -x "$DEB" "$WORK/k"
CONFIG="$(ls "$WORK"/k/boot/config-* | head -n1)"
VMLINUZ="$(ls "$WORK"/k/boot/vmlinuz-* | head -n1)"
KVER="${CONFIG##*/config-}"
MODDIR="$WORK/k/lib/modules/$KVER"
[ -f "$VMLINUZ" ] && [ -d "$MODDIR" ] || die "no vmlinuz or lib/modules/$KVER in $DEB"

step "check kernel config"
cfg () { sed -n "s/^$1=\(.*\)$/\1/p" "$CONFIG" | head -n1; }
for o in CONFIG_BLK_DEV_INITRD CONFIG_DEVTMPFS CONFIG_SERIAL_8250_CONSOLE CONFIG_PCI; do
	[ "$(cfg "$o")" = y ] || die "$o is not =y in $KVER"
done
COMPRESS=""
if [ "$(cfg CONFIG_RD_GZIP)" = y ]; then COMPRESS=gzip
elif [ "$(cfg CONFIG_RD_XZ)" = y ]; then COMPRESS=xz
else die "the kernel supports neither gzip nor xz initramfs"; fi
# Options we need -> the module that provides them when they are =m.
WANT_MODULES=()
for pair in CONFIG_VIRTIO_PCI:virtio_pci CONFIG_VIRTIO_BLK:virtio_blk CONFIG_SERIAL_8250:8250; do
	o="${pair%%:*}"; m="${pair##*:}"
	case "$(cfg "$o")" in
	y) echo "shoal-guest build: $o=y (built in)" >&2 ;;
	m) echo "shoal-guest build: $o=m (module $m goes into the initramfs)" >&2; WANT_MODULES+=("$m") ;;
	*) die "$o is not set in $KVER" ;;
	esac
done

step "resolve modules"
if [ ! -f "$MODDIR/modules.dep" ]; then
	# The package ships no modules.dep (depmod runs at install time): make one in the temp tree.
	"$BUSYBOX" depmod -b "$WORK/k" "$KVER" >&2 || die "depmod failed"
fi
[ -f "$MODDIR/modules.dep" ] || die "no modules.dep for $KVER"
# modules.dep: "path: dep dep ..." with paths relative to MODDIR.
mod_path () { # module name -> path as in modules.dep
	local n="${1//-/_}" alt="${1//_/-}"
	{ grep -E "(^|/)(${n}|${alt})\.ko(\.xz|\.zst|\.gz)?:" "$MODDIR/modules.dep" || true; } | head -n1 | cut -d: -f1
}
ORDER=()
declare -A SEEN=()
visit () { # depth-first: every dependency before the module itself
	local p="$1" d
	[ -n "${SEEN[$p]:-}" ] && return 0
	SEEN[$p]=1
	for d in $({ grep -E "^${p//./\\.}:" "$MODDIR/modules.dep" || true; } | head -n1 | cut -d: -f2-); do visit "$d"; done
	ORDER+=("$p")
}
for m in "${WANT_MODULES[@]}"; do
	p="$(mod_path "$m")"
	[ -n "$p" ] || die "module $m not found in modules.dep"
	visit "$p"
done

step "compile shoal-guest"
gcc -static -O2 -Wall -o "$WORK/shoal-guest" "$HERE/shoal-guest.c" >&2 || die "gcc failed"

step "assemble initramfs"
R="$WORK/root"
mkdir -p "$R"/{bin,dev,proc,sys,tmp,lib/modules}
cp "$BUSYBOX" "$R/bin/busybox"
for a in $("$R/bin/busybox" --list); do [ -e "$R/bin/$a" ] || ln -s busybox "$R/bin/$a"; done
install -m 755 "$WORK/shoal-guest" "$R/bin/shoal-guest"
install -m 755 "$HERE/init" "$R/init"
# The kernel opens /dev/console for /init before devtmpfs is mounted; /init also redirects itself.
mknod -m 600 "$R/dev/console" c 5 1 2>/dev/null || echo "shoal-guest build: note: cannot mknod dev/console (init redirects to ttyS0 itself)" >&2
: > "$R/lib/modules/load.list"
for p in "${ORDER[@]}"; do
	base="$(basename "$p")"
	case "$base" in
	*.ko.xz) xz -dc "$MODDIR/$p" > "$R/lib/modules/${base%.xz}"; base="${base%.xz}" ;;
	*.ko.gz) gzip -dc "$MODDIR/$p" > "$R/lib/modules/${base%.gz}"; base="${base%.gz}" ;;
	*.ko.zst)
		command -v zstd >/dev/null || apt-get install -y -q zstd >&2 || die "zstd needed for $p"
		zstd -dcq "$MODDIR/$p" > "$R/lib/modules/${base%.zst}"; base="${base%.zst}" ;;
	*.ko) cp "$MODDIR/$p" "$R/lib/modules/$base" ;;
	*) die "unknown module file $p" ;;
	esac
	echo "$base" >> "$R/lib/modules/load.list"
done
echo "shoal-guest build: modules in load order: $(tr '\n' ' ' < "$R/lib/modules/load.list")" >&2

step "pack initramfs"
STAGE="$(mktemp -d "$(dirname "$OUT")/.$(basename "$OUT").tmp.XXXXXX")"
(cd "$R" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) |
	if [ "$COMPRESS" = gzip ]; then gzip -9 -n; else xz -9 --check=crc32; fi > "$STAGE/initrd.img"
cp "$VMLINUZ" "$STAGE/vmlinuz"

step "write guest.json"
pkgver () { dpkg-query -W -f='${Version}' "$1"; }
json_str () { printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
MODS_JSON="$(sed 's/.*/"&"/' "$R/lib/modules/load.list" | paste -sd, -)"
cat > "$STAGE/guest.json.tmp" <<EOF
{
  "key": $(json_str "$KEY"),
  "kernelVersion": $(json_str "$KVER"),
  "packages": [
    { "name": $(json_str "$KPKG"), "version": $(json_str "$KPKG_VERSION") },
    { "name": "busybox-static", "version": $(json_str "$(pkgver busybox-static)") },
    { "name": "libc6-dev", "version": $(json_str "$(pkgver libc6-dev)") },
    { "name": "gcc", "version": $(json_str "$(pkgver gcc)") }
  ],
  "modules": [${MODS_JSON}],
  "initrdCompression": $(json_str "$COMPRESS"),
  "sha256": {
    "vmlinuz": $(json_str "$(sha256sum "$STAGE/vmlinuz" | cut -d' ' -f1)"),
    "initrd.img": $(json_str "$(sha256sum "$STAGE/initrd.img" | cut -d' ' -f1)")
  },
  "builtAt": $(json_str "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
}
EOF
mv "$STAGE/guest.json.tmp" "$STAGE/guest.json"

step "install into $OUT"
chmod 755 "$STAGE"
[ -d "$OUT" ] && rmdir "$OUT" 2>/dev/null || true
if ! mv -T "$STAGE" "$OUT" 2>/dev/null; then
	# Someone else finished the same build first: keep theirs.
	[ -f "$OUT/guest.json" ] || die "cannot rename $STAGE to $OUT"
	echo "shoal-guest build: a concurrent build finished first; using it" >&2
else
	STAGE=""
fi
echo "shoal-guest build: done: $OUT ($KPKG $KPKG_VERSION)" >&2
echo "$OUT" >&3
