//! The sandbox that runs RUN steps: namespaces, overlay mounts, and the only home of unsafe syscalls.
