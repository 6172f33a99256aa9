// The JSON API, called with the token of this browser tab. The token lives in sessionStorage
// (this tab only, gone when it closes): never in a URL, never in a cookie, so no other site
// can make the browser act with it.
const KEY = "codeq.token";
export const API = "/v1/codeq";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (value) => sessionStorage.setItem(KEY, value);
export const signOut = () => {
  sessionStorage.removeItem(KEY);
  session = null;
};

let session = null;

/** Forget the cached answer of whoami (the next call asks the server again). */
export const forget = () => {
  session = null;
};

/** Who the token is (GET /whoami), asked once per page load. */
export async function whoami() {
  if (session === null) session = await api("GET", "/whoami");
  return session;
}

/** Call an API route; resolve to its JSON body (null for 204), or throw an ApiError. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token() ?? ""}` };
  const init = { method, headers, credentials: "omit", cache: "no-store", redirect: "error" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(API + path, init);
  } catch (err) {
    throw new ApiError(0, "unreachable", `cannot reach the server: ${err.message}`);
  }
  if (response.status === 204) return null;
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const message = data && typeof data.error === "string" ? data.error : response.statusText;
    throw new ApiError(response.status, data?.code ?? "error", message);
  }
  return data;
}

/** A query string of the set values of `params` ("" when none). */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== "") q.set(k, String(v));
  }
  const text = q.toString();
  return text ? `?${text}` : "";
}

export const enc = encodeURIComponent;
