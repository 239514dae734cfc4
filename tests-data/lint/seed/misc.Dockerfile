ARG BASE
FROM ${BASE} AS Builder
from alpine:3.19 as builder
ENV API_TOKEN=abc
RUN apk add curl git=2.40-r0 | tee /log
RUN npm install express
RUN gem install rails
RUN yum install -y httpd
WORKDIR app
EXPOSE 80:80 53/UDP
ADD app.tar.gz /opt/
ADD src /opt/src
COPY app /app
RUN chown -R nobody /app
CMD run me
CMD ["other"]
MAINTAINER someone
