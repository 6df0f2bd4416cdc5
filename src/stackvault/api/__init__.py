"""The self-service REST API (`stackvault api`, docs/api.md): JSON under /v1, Keystone's identity,
oslo.policy's rules. Another face on the job functions the CLI and the scheduler call, never a
second implementation of them: a resource here only chooses what the caller may see."""
