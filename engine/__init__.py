"""hotshot's render engine: frames, models and the files it is told to write.

It knows nothing of hot folders, requests or SQLite. Callers build a
`engine.job.RenderJob` and call `engine.render.render()`. Importing this
package is cheap; torch and diffusers load only when a render needs them.
"""
