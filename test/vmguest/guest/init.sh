#!/bin/sh
# /init of the test/vmguest initramfs (PID 1). Kernel command line:
#   tabby.name=NAME  the guest's name, served by its TCP servers (default: vmguest)
# Console lines for the host: "TABBY-VMGUEST: <event> ..." (see the Go package).
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev 2>/dev/null
mkdir -p /dev/pts /tmp /run /www
mount -t devpts devpts /dev/pts
echo 1 >/proc/sys/kernel/printk
echo "TABBY-VMGUEST: init uptime=$(cut -d' ' -f1 /proc/uptime)" >/dev/console

name=vmguest
for arg in $(cat /proc/cmdline); do
	case "$arg" in
	tabby.name=*) name="${arg#tabby.name=}" ;;
	esac
done
hostname "$name"

# The cloud kernel builds virtio (and the ACPI button) as modules: load them in
# dependency order.
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci \
	failover net_failover virtio_net button evdev; do
	insmod "/lib/modules/$m.ko" || echo "TABBY-VMGUEST: insmod $m failed" >/dev/console
done

ip link set lo up
ip link set eth0 up || echo "TABBY-VMGUEST: no eth0" >/dev/console

# The power button (virsh shutdown --mode acpi) powers off.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "TABBY-VMGUEST: poweroff" >/dev/console\nsync\npoweroff -f\n' >/etc/acpi/PWRF/00000080
chmod 755 /etc/acpi/PWRF/00000080
mkdir -p /var/log /var/run
acpid -c /etc/acpi -l /var/log/acpid.log || echo "TABBY-VMGUEST: acpid failed" >/dev/console

# Servers: HTTP on 80 (GET / answers the name), the bare name on TCP 8080.
echo "$name" >/www/index.html
printf '#!/bin/sh\necho %s\n' "$name" >/bin/tabby-name
chmod 755 /bin/tabby-name
httpd -p 80 -h /www
(while :; do nc -ll -p 8080 -e /bin/tabby-name; done) </dev/null >/dev/null 2>&1 &

# DHCP: -b goes to the background after the first lease (the script prints
# "dhcp ok") or after the first round of failed tries ("dhcp failed"); it keeps
# renewing or retrying there.
udhcpc -i eth0 -s /etc/udhcpc.script -O staticroutes -x "hostname:$name" \
	-t 10 -T 1 -A 1 -b

echo "TABBY-VMGUEST: ready name=$name" >/dev/console

# The shell on the serial console, fed by the host a line at a time: no prompt,
# no echo (an interactive sh would prompt). It is restarted when it exits, so PID 1
# never does.
stty -F /dev/ttyS0 -echo -onlcr 2>/dev/null
while :; do
	setsid sh -c 'exec </dev/ttyS0 >/dev/ttyS0 2>&1; while IFS= read -r l; do eval "$l"; done'
	echo "TABBY-VMGUEST: shell exited" >/dev/console
done
