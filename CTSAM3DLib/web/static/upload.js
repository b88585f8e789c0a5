// CTSAM3D web app: upload the chosen CT files over HTTP. The gateway streams each file into the tab's own
// folder (POST upload?name=...&batch=...), refusing it past the session's upload budget; then the tab's
// server opens the batch. Refusals are shown in the page's error banner.
window.ctsam3dUpload = async function (chosen, trame) {
  const files = [].concat(chosen || []).filter(Boolean);
  if (!files.length) return;
  const limit = trame.state.get("max_upload_bytes");
  const total = files.reduce((sum, file) => sum + file.size, 0);
  const gib = (bytes) => (bytes / 2 ** 30).toFixed(1);
  if (limit && total > limit) {
    await trame.trigger("upload_failed", [`The files hold ${gib(total)} GiB; this server takes at most ` +
      `${gib(limit)} GiB of uploads per session (--max-upload-gb).`]);
    return;
  }
  let batch = "";
  try {
    for (const [index, file] of files.entries()) {
      trame.state.set("status", `Uploading ${file.name} (${index + 1} of ${files.length})...`);
      const query = new URLSearchParams({ name: file.name });
      if (batch) query.set("batch", batch);
      const response = await fetch(`upload?${query}`, { method: "POST", body: file });
      if (!response.ok) throw new Error(await refusalText(response));
      batch = (await response.json()).batch;
    }
  } catch (error) {
    const text = error instanceof TypeError ? `The upload was cut off (${error.message}); the server may have ` +
      "refused it as too large." : error.message;
    await trame.trigger("upload_failed", [text]);
    return;
  }
  trame.state.set("status", "Opening the upload...");
  await trame.trigger("open_upload", [batch]);
};

async function refusalText(response) {
  const text = await response.text();
  const pre = new DOMParser().parseFromString(text, "text/html").querySelector("pre");
  return (pre ? pre.textContent : text).trim() || `The upload was refused (HTTP ${response.status}).`;
}
