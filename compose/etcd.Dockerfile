# etcd for the compose cluster: Debian's etcd and etcdctl (etcd-server and
# etcd-client) with the two libraries `ldd` names, and nothing else.
# compose/build-images.sh stages them under rootfs/.
FROM scratch
COPY rootfs/ /
# The mount point of a member's data volume: a new volume takes this
# directory's owner, etcd's user in docker-compose.yml.
COPY --chown=10004:10004 data /var/lib/etcd
ENV PATH=/usr/local/bin
USER 10004:10004
ENTRYPOINT []
