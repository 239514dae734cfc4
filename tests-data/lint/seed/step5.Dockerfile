FROM ubuntu:latest
RUN groupadd -r babyshark && useradd -r -g babyshark babyshark
USER babyshark
RUN apt-get update \
    && apt-get install -y mongodb-server \
    && apt-get install -y nodejs
USER root
COPY . /app
