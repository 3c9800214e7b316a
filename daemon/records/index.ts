/** The records capability's public face: what the HTTP layer needs besides records' routers. */
export { rejectInvalidUtf8 } from "./http.js";
