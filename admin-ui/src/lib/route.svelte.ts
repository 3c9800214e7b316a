/** Hash routing: #/setup, #/login, #/ — no server round trip, no history API needed. */
function current(): string {
  return location.hash.replace(/^#/, "") || "/";
}

export const route = $state({ path: current() });

window.addEventListener("hashchange", () => {
  route.path = current();
});

export function navigate(path: string) {
  location.hash = path;
}
