// AwareRestore: show the text a node returns in its `ui.text` (tags, degradation tables, ...) on the node itself.
import { app } from "../../../scripts/app.js";
import { ComfyWidgets } from "../../../scripts/widgets.js";

const WIDGET = "aware_restore_text";

app.registerExtension({
  name: "AwareRestore.ShowText",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!String(nodeData?.category ?? "").startsWith("AwareRestore")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const text = message?.text;
      if (text === undefined || text === null) return;
      const value = Array.isArray(text) ? text.join("\n") : String(text);
      let widget = this.widgets?.find((w) => w.name === WIDGET);
      if (!widget) {
        widget = ComfyWidgets["STRING"](this, WIDGET, ["STRING", { multiline: true }], app).widget;
        widget.serialize = false;
        if (widget.inputEl) {
          widget.inputEl.readOnly = true;
          widget.inputEl.style.opacity = 0.85;
        }
      }
      widget.value = value;
      requestAnimationFrame(() => {
        const size = this.computeSize();
        size[0] = Math.max(size[0], this.size[0]);
        size[1] = Math.max(size[1], this.size[1]);
        this.setSize?.(size);
        app.graph?.setDirtyCanvas(true, false);
      });
    };
  },
});
