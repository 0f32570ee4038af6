# The operator image: the static binary on a distroless base (CA certificates and time zones, no shell,
# non-root). Build the binary first with scripts/build-static; the image adds nothing but the file.
#
#   scripts/build-static && docker build -t mysql-backup-operator:dev .
FROM gcr.io/distroless/static-debian12:nonroot
COPY target/x86_64-unknown-linux-gnu/release/mysql-backup-operator /mysql-backup-operator
USER 65532:65532
ENTRYPOINT ["/mysql-backup-operator"]
CMD ["controller"]
