//! The build: turns a parsed Dockerfile and a build context into an image in
//! the store. Each step is keyed for the cache; steps that miss are run (RUN in
//! the sandbox, COPY/ADD straight from the context) and committed as layers.

pub mod cachekey;
