# A fresh Debian host for the playbook test: systemd as PID 1 and python3 (Ansible's only need).
# CI passes the offline base image: --build-arg BASE_IMAGE=local/debian:bookworm.
ARG BASE_IMAGE=debian:bookworm
FROM ${BASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
# policy-rc.d: packages must not start their services (irqbalance, tuned) in the test container,
# which shares the host's kernel; the roles start them only where live changes are allowed.
RUN printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 0755 /usr/sbin/policy-rc.d \
 && apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus python3 ca-certificates >/dev/null \
 && find /etc/systemd/system /lib/systemd/system -path '*.wants/*' \( -name '*getty*' -o -name 'systemd-logind*' -o -name '*udev*' \) -delete \
 && systemctl mask systemd-firstboot.service systemd-udevd.service systemd-modules-load.service sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount \
 && rm -rf /var/lib/apt/lists/*
STOPSIGNAL SIGRTMIN+3
CMD ["/lib/systemd/systemd"]
