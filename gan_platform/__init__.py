"""The platform: what the service and the worker share and the ML library does not need.

Settings (`gan_platform.settings`), the database layer (`gan_platform.records`), the artifact
store and its layout (`gan_platform.artifacts`) and structured logs (`gan_platform.logs`).
Torch-free, and it imports neither `models`, `serving`, `service` nor `worker`
(`make lint` checks it).
"""
