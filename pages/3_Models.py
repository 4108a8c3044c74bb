"""Models: checkpoints with metadata and metrics, upload / download, noisy evaluation, Table I."""

import os

import streamlit as st

from faces.dashboard.helpers import (checkpoint_rows, device_choices, evaluate_checkpoint, evaluation_row,
                                     mime_of, model_labels, table_one, workspace_data_root)
from dat.checkpoint import name_slug
from dat.table import layout_table, layout_to_csv, layout_to_markdown, to_latex
from faces.dashboard.workspace import MAX_UPLOAD_BYTES, Workspace

st.set_page_config(page_title="Models", layout="wide")
st.title("Models")
st.markdown("Every checkpoint in `checkpoints/` (and its trio folders) with how it was trained and "
            "what it scored. Checkpoints are safetensors files with JSON metadata: they are never "
            "unpickled, so uploading one cannot run code.")

ws = Workspace.default()


# Cached across reruns, so changing an unrelated widget neither re-reads a checkpoint nor re-evaluates
# Table I; a rewritten file has a new mtime (or new metadata) and misses the cache.
@st.cache_data(max_entries=4, show_spinner=False)
def file_bytes(path: str, mtime: float) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


@st.cache_data(max_entries=8, show_spinner=False)
def cached_table(checkpoints: list[dict], device: str | None, device_mtime: float | None, data_root: str) -> dict:
    return table_one(checkpoints, device, data_root=data_root)

with st.expander("Upload a checkpoint"):
    upload = st.file_uploader(f"Checkpoint (.safetensors, at most {MAX_UPLOAD_BYTES // 2**20} MB)",
                              type=["safetensors"], key="checkpoint_upload")
    if upload is not None and st.button("Store it in checkpoints/", key="store_upload"):
        try:
            path = ws.store_checkpoint_upload(upload.name, upload.getvalue())
        except (ValueError, TypeError) as exc:
            st.error(f"Upload refused: {exc}")
        else:
            st.success(f"Stored as {path.name}.")

rows = ws.list_checkpoints()
if not rows:
    st.info("No checkpoints yet. Make the demo trio with `dat demo` in a terminal (or the button on the "
            "home page), train on the Train page, or upload one above.")
    st.stop()

st.dataframe(checkpoint_rows(rows), hide_index=True)
by_name = {row["name"]: row for row in rows}
names = list(by_name)
labels = model_labels(rows)  # each checkpoint by its name (as trained, or the readable default)
shown = {n: f"{labels[n]}  ·  {n}" for n in names}

st.header("One checkpoint")
name = st.selectbox("Checkpoint", names, key="one_checkpoint", format_func=shown.get)
row = by_name[name]
c1, c2 = st.columns([3, 1])
with c1.expander("Metadata", expanded=False):
    st.json({k: v for k, v in row.items() if k != "history"}, expanded=False)
c2.download_button("Download", file_bytes(str(row["path"]), os.path.getmtime(row["path"])),
                   file_name=name_slug(labels[name], "checkpoint") + ".safetensors", mime="application/octet-stream",
                   key="download_checkpoint")

st.header("Evaluate with and without noise")
choices = device_choices(ws)
with st.form("evaluate_form"):
    picked = st.multiselect("Checkpoints", names, default=[name], key="eval_models",
                            format_func=shown.get)
    device = st.selectbox("Device profile", list(choices), key="eval_device")
    c1, c2 = st.columns(2)
    draws = c1.number_input("Noise draws R", 1, 1000, 20, key="eval_draws")
    seed = c2.number_input("Eval seed of the draws", 0, 1_000_000, 0, key="eval_seed",
                           help="0 is the rule `dat eval` and Table I use: the same draws give the same numbers")
    if st.form_submit_button("Evaluate"):
        results = []
        for n in picked:
            try:
                with st.spinner(f"Evaluating {n}..."):
                    result = evaluate_checkpoint(by_name[n]["path"], choices[device], draws=int(draws), seed=int(seed),
                                                 data_root=workspace_data_root(ws))
            except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
                st.error(f"Could not evaluate {n}: {exc}")
            else:
                results.append(evaluation_row(labels[n], device, result))
        st.session_state["evaluations"] = results
if st.session_state.get("evaluations"):
    st.dataframe(st.session_state["evaluations"], hide_index=True)
    st.caption("Noisy accuracy: mean ± standard deviation over the R noise draws (simulated chips) of one model; "
               "p1, p5: its worst chips, the 1st and 5th percentile over the draws.")

st.header("Table I")
selected = st.multiselect("Models in the table", names, default=names, key="table_models",
                          format_func=shown.get)
AS_TRAINED = "each model's own evaluation device"
table_device = st.selectbox("Noise in the table", [AS_TRAINED] + list(choices), key="table_device",
                            help="Models evaluated under another device are re-evaluated by the same rule as `dat eval` "
                            "(the model's own number of draws, eval seed 0).")
if selected:
    try:
        with st.spinner("Building Table I..."):
            spec = None if table_device == AS_TRAINED else choices[table_device]
            table = cached_table([by_name[n] for n in selected], spec,
                                 os.path.getmtime(spec) if spec and os.path.isfile(spec) else None,
                                 str(workspace_data_root(ws)))
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as exc:
        st.error(f"Could not build Table I: {exc}")
    else:
        laid = layout_table(table["rows"])
        st.caption(laid.caption)
        # Short headers, columns sized to their content (no fixed widths that would cut a name off);
        # the tooltip of each header says what it holds.
        tips = {" w/o noise": "test accuracy (%) without noise, mean ± 95 % CI half-width over the n seeds",
                " w/ noise": "test accuracy (%) under this device's noise, mean over the draws, ± over the n seeds",
                " n": "distinct training seeds", "Time (min)": "training time in minutes, ± over the n seeds",
                "Trained on": "device the model was trained with (- : trained without noise)"}
        config = {c: st.column_config.TextColumn(c, help=next((t for k, t in tips.items() if c.endswith(k)), None))
                  for c in laid.columns}
        st.dataframe([dict(zip(laid.columns, row)) for row in laid.cells], hide_index=True, width="stretch",
                     column_config=config)
        c1, c2, c3, c4 = st.columns(4)
        c1.download_button("Table I (LaTeX)", to_latex(laid), file_name="table1.tex", mime=mime_of("table1.tex"),
                           key="table_tex", help="booktabs; needs \\usepackage{booktabs}")
        c2.download_button("Table I (CSV)", layout_to_csv(laid), file_name="table1.csv", mime=mime_of("table1.csv"),
                           key="table_csv")
        c3.download_button("Table I (Markdown)", layout_to_markdown(laid) + "\n" + table["markdown"],
                           file_name="table1.md", mime=mime_of("table1.md"), key="table_md")
        c4.download_button("All statistics (CSV)", table["csv"], file_name="table1-statistics.csv",
                           mime=mime_of("table1-statistics.csv"), key="table_stats_csv", help="one line per row and device: sd, interval bounds, "
                           "worst-chip percentile, paired difference to SGD-BN")
        with st.expander("Statistics per row and paired differences to SGD-BN"):
            st.markdown(table["markdown"])
