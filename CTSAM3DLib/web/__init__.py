"""``ctsam3d serve``: CTSAM3D in the browser on trame-slicer (the ``web`` extra).

``gateway`` gives every browser tab its own worker process (``app``: one trame-slicer scene, one
``mrml.logic.BridgeLogic``), so the web app and the Slicer module run the same engine code path; it
streams uploads into the tab's folder and guards the workers (secret, Host, Origin; see docs/web.md).
``workspace`` is the trame-free part of a tab (CT, segmentation, segments, clicks, downloads);
``inputs`` says what a tab may read (``DataAccess``) and turns a server path, an upload or a zip into
files Slicer can read.
"""
