"""The page of one tab: toolbar (open, window, downloads), side panel (tools, segments, settings), four views.

Widgets only: every action calls a method of ``CTSAM3DWebApp`` through the trame controller; the page's state
keys are listed in ``app.DEFAULT_STATE``. Elements the end-to-end test uses carry ``id`` attributes. Uploads go
over HTTP (``static/upload.js``: the gateway streams them into the tab's folder), not through the websocket.
"""

from __future__ import annotations

from typing import Any

from trame.widgets import html
from trame.widgets import vuetify3 as v3
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout

from CTSAM3DLib.web.workspace import WINDOW_PRESETS

# What the .nii.gz download does with overlapping segments (shown on the page and as the button's tooltip).
LABELMAP_NOTE = ("nii.gz: one label per voxel (label n = n-th segment); where segments overlap, the later segment "
                 "wins. seg.nrrd keeps overlaps, names, colours and clicks.")


def build_page(server: Any, layout_manager: Any, actions: Any) -> SinglePageWithDrawerLayout:
    """Build the page on ``server``; ``actions`` is the ``CTSAM3DWebApp`` whose methods the widgets call."""
    with SinglePageWithDrawerLayout(server, width=340) as page:
        page.title.set_text("CTSAM3D")
        with page.toolbar:
            _toolbar(actions)
        with page.drawer:
            _tools(actions)
            _segment_list(actions)
            _settings()
        with page.content, html.Div(style="position: relative; width: 100%; height: calc(100vh - 96px);"):
            layout_manager.initialize_layout_grid(page)
            v3.VProgressLinear(id="progress", indeterminate=True, color="primary", v_show=("busy",), height=5,
                               style="position: absolute; top: 0; left: 0; z-index: 10;")
            with v3.VAlert(id="error-banner", v_show=("error",), type="error", closable=True, density="compact",
                           click_close="error = ''", style="position: absolute; top: 8px; left: 8px; right: 8px; "
                                                           "z-index: 10;"):
                html.Span("{{ error }}")
        page.footer.clear()
        with page.footer:
            html.Span("{{ status }}", id="status", classes="text-caption mr-4")
            html.Span("{{ probe }}", id="probe", classes="text-caption text-medium-emphasis")
    return page


def _toolbar(actions: Any) -> None:
    html.Span("{{ ct_name }}", id="ct-name", classes="text-subtitle-2 ml-4")
    v3.VSpacer()
    v3.VTextField(v_model=("ct_path",), id="ct-path", label="CT on the server (file, DICOM folder or .zip)",
                  density="compact", hide_details=True, style="max-width: 360px;", classes="mr-2",
                  keyup_enter=actions.open_path)
    v3.VBtn("Open", id="open-path", click=actions.open_path, variant="tonal", classes="mr-2", disabled=("busy",))
    v3.VFileInput(id="upload", label="Upload CT", multiple=True, density="compact", hide_details=True,
                  prepend_icon="mdi-upload", style="max-width: 200px;", classes="mr-2", disabled=("busy",),
                  accept=".nii,.gz,.nrrd,.nhdr,.mha,.mhd,.raw,.zip,.dcm",
                  update_modelValue="window.ctsam3dUpload($event, trame)")
    v3.VSelect(v_model=("window_preset",), items=("window_presets", list(WINDOW_PRESETS)), id="window-preset",
               label="Window", density="compact", hide_details=True, style="max-width: 150px;", classes="mr-2")
    for suffix, label in ((".seg.nrrd", "seg.nrrd"), (".nii.gz", "nii.gz")):
        name = actions.download_trigger(suffix)
        v3.VBtn(label, id=f"download-{label.replace('.', '-')}", prepend_icon="mdi-download", variant="text",
                disabled=("!has_ct",), title=LABELMAP_NOTE,
                click=f"utils.download(ct_name + '{suffix}', trigger('{name}'), '{actions.mime(suffix)}')")


def _tools(actions: Any) -> None:
    with v3.VCard(flat=True, classes="pa-2"):
        v3.VCardSubtitle("Click tool")
        with v3.VBtnToggle(v_model=("tool",), mandatory=True, density="compact", classes="mb-2", divided=True):
            v3.VBtn("Include (+)", id="tool-include", value="include", color="green")
            v3.VBtn("Exclude (-)", id="tool-exclude", value="exclude", color="red")
        with html.Div(classes="d-flex flex-wrap ga-1"):
            for label, key, icon in (("Undo", "undo", "mdi-undo"), ("Redo", "redo", "mdi-redo"),
                                     ("Reset", "reset", "mdi-restore")):
                v3.VBtn(label, id=key, prepend_icon=icon, size="small", variant="tonal", disabled=("!segment_id",),
                        click=(actions.submit, f"['{key}']"))
            v3.VBtn("Cancel", id="cancel", prepend_icon="mdi-cancel", size="small", variant="tonal",
                    disabled=("!busy",), click=actions.cancel)


def _segment_list(actions: Any) -> None:
    with v3.VCard(flat=True, classes="pa-2"):
        with v3.VCardSubtitle(classes="d-flex align-center"):
            html.Span("Segments")
            v3.VSpacer()
            v3.VBtn("Add", id="add-segment", prepend_icon="mdi-plus", size="small", variant="tonal",
                    disabled=("!has_ct",), click=actions.add_segment)
        with v3.VList(density="compact", id="segment-list"):
            with v3.VListItem(v_for="s in segments", key="s.segment_id", active=("s.segment_id === segment_id",),
                              click=(actions.select, "[s.segment_id]"), classes="px-1"):
                with html.Div(classes="d-flex align-center ga-1"):
                    html.Input(type="color", value=("s.color",), style="width: 26px; height: 22px;",
                               change=(actions.set_color, "[s.segment_id, $event.target.value]"), click_stop=True)
                    v3.VTextField(model_value=("s.name",), density="compact", hide_details=True, variant="plain",
                                  click_stop=True, change=(actions.rename, "[s.segment_id, $event.target.value]"))
                    v3.VBtn(icon=("s.is_visible ? 'mdi-eye' : 'mdi-eye-off'",), size="x-small", variant="text",
                            click_stop=(actions.set_visible, "[s.segment_id, !s.is_visible]"))
                    v3.VBtn(icon="mdi-delete", size="x-small", variant="text",
                            click_stop=(actions.delete, "[s.segment_id]"))
        html.Div(LABELMAP_NOTE, id="labelmap-note", classes="text-caption text-medium-emphasis px-1")


def _settings() -> None:
    with v3.VCard(flat=True, classes="pa-2"):
        v3.VCardSubtitle("Settings")
        v3.VSwitch(v_model=("use_cpp",), id="use-cpp", label="Cross-patch prompting (CPP)", density="compact",
                   hide_details=True, color="primary")
        v3.VTextField(v_model_number=("max_patches",), type="number", label="Most patches per click", min=1, max=125,
                      density="compact", hide_details=True, classes="my-2")
        v3.VSwitch(v_model=("large_organs",), id="large-organs", label="Large organs (CPP clicks deep inside)",
                   density="compact", hide_details=True, color="primary")
        v3.VSelect(v_model=("device",), items=("devices",), id="device", label="Device", density="compact",
                   hide_details=True, classes="my-2")
        v3.VSwitch(v_model=("show_3d",), label="Segments in 3-D", density="compact", hide_details=True,
                   color="primary")
