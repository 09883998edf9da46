"""The desktop front end of the agent: icons, texts, notifications, windows, autostart.

Nothing here imports a GUI toolkit at import time (pystray needs a display as soon as it is
imported, Tk may be missing), so headless installs can import :mod:`agent.ui` freely.
"""
