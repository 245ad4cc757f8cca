"""The Render Video workspace in a browser (`hotshot web`).

A separate, torch-free process beside the daemon. It reads the state database
read-only, serves registered files by database id, and changes things only the
ways an editor can: it writes a `*.render.json` into a shot folder, and sends
cancel, retry, pause and resume through the same commands as the CLI.
"""
