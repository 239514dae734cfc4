FROM python:3.12-alpine AS build
RUN apk add --no-cache build-base=0.5-r3
WORKDIR /app
COPY requirements.txt ./
RUN pip install --no-cache-dir --prefix=/install -r requirements.txt

FROM python:3.12-alpine
COPY --from=build /install /usr/local
WORKDIR /app
COPY --chown=app:app . .
RUN addgroup -S app && adduser -S -G app app
USER app
EXPOSE 5000
ENTRYPOINT ["python", "application.py"]
