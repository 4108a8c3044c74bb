"""Streamlit widgets shared by several pages (a subfolder of pages/, so Streamlit lists no page here)."""
