"""The container path: a Docker engine, compose, and images built on this machine.

No container registry answers here, so every image is built locally: a Debian base from
debootstrap, the project's image from its Dockerfile with a wheelhouse built on the host,
and stand-ins for the upstream images of docker-compose.yml made from the artefacts the
local stack already has (the go-built MinIO, the Maven-fetched Kafka jars, Debian's
PostgreSQL). ``python -m infra.docker build`` prints the image variables for compose.
"""
