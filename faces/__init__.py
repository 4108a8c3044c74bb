"""The faces of the tool: the command line (`faces.cli`, the `dat` command) and the dashboard's
glue (`faces.dashboard`, used by app.py and pages/). They call the recipes of the libraries `dat`
(noise profile, training) and `landscape`; nothing in those libraries imports a face."""
