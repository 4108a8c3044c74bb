"""Glue of the Streamlit dashboard (app.py and pages/): workspace folders, background jobs, page
helpers and widgets. UI only; the numbers come from the `dat` and `landscape` recipes."""
