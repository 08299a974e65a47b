// The passkey pages of backvault: create a passkey (enrol) or use one (unlock).
//
// The address fragment carries the ceremony id, the port where the backvault command
// waits on 127.0.0.1 and a one-time state: #ceremony=ID&port=PORT&state=STATE. The page
// fetches the ceremony's options from this server, runs the WebAuthn ceremony with the
// PRF extension, posts the credential to the server without its PRF results, and posts
// the PRF result only to the command at http://127.0.0.1:PORT/handoff.
"use strict";

(function () {
  const MIN_PORT = 1024;
  const MAX_PORT = 65535;
  const CEREMONY_PATTERN = /^[A-Za-z0-9_-]{16,128}$/;
  // The terminal has the last word: the command may still fail after the page is done.
  const DONE_TEXT = {
    enrol: "Passkey created. You can close this tab; the terminal says whether it was added.",
    unlock: "Passkey accepted. You can close this tab; the terminal shows the rest.",
  };
  const CLOSE_TEXT = " You can close this tab and return to the terminal.";
  const NO_PRF_TEXT =
    "This passkey cannot protect backups: your browser or the device that keeps your " +
    "passkeys does not support the feature (called PRF) that backvault needs. Nothing " +
    "was saved.";

  // An error with one of the codes the command understands: no-prf, cancelled, server,
  // unsupported.
  class PageError extends Error {
    constructor(code, message) {
      super(message);
      this.code = code;
    }
  }

  const statusElement = document.getElementById("status");
  const button = document.getElementById("start");
  const pageKind = document.body.dataset.page;

  function show(kind, text) {
    statusElement.textContent = text;
    statusElement.className = kind;
  }

  // Base64url without padding, the form of binary values in WebAuthn JSON.
  function encode(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decode(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    const bytes = new Uint8Array(binary.length);
    for (let index = 0; index < binary.length; index += 1) {
      bytes[index] = binary.charCodeAt(index);
    }
    return bytes;
  }

  function readFragment() {
    const parameters = new URLSearchParams(window.location.hash.slice(1));
    const portText = parameters.get("port") || "";
    const port = /^[0-9]{4,5}$/.test(portText) ? Number(portText) : NaN;
    return {
      ceremony: parameters.get("ceremony") || "",
      state: parameters.get("state") || "",
      port: port >= MIN_PORT && port <= MAX_PORT ? port : null,
    };
  }

  // Send the result to the backvault command, and never anywhere else.
  async function postToCommand(link, body) {
    const response = await fetch("http://127.0.0.1:" + link.port + "/handoff", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ state: link.state }, body)),
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer",
    });
    if (!response.ok) {
      throw new Error("the backvault command responded with status " + response.status);
    }
  }

  async function serverRequest(path, init) {
    let response;
    try {
      response = await fetch(path, Object.assign({ credentials: "omit", cache: "no-store" }, init));
    } catch (error) {
      throw new PageError("server", "The backup server could not be reached. Check your connection.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : "";
      throw new PageError("server", detail || "The backup server responded with status " + response.status + ".");
    }
    return body;
  }

  function fetchOptions(link) {
    return serverRequest("/v1/passkeys/ceremonies/" + link.ceremony + "/options", {});
  }

  function finishOnServer(link, credential) {
    return serverRequest("/v1/passkeys/ceremonies/" + link.ceremony + "/finish", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ credential: credential }),
    });
  }

  // Delete the passkey this enrolment stored on the server, and ask the provider to drop
  // it: without the command, no key slot will ever use it.
  async function undoEnrolment(link, rpId, credentialId) {
    forgetCredential(rpId, credentialId);
    try {
      await serverRequest("/v1/passkeys/ceremonies/" + link.ceremony + "/undo", { method: "POST" });
      return true;
    } catch (error) {
      return false;
    }
  }

  // Only the fact that PRF is enabled goes to the server, never a PRF result.
  function extensionsForServer(results) {
    const forServer = {};
    if (results.prf && typeof results.prf.enabled === "boolean") {
      forServer.prf = { enabled: results.prf.enabled };
    }
    return forServer;
  }

  function registrationJson(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      response: {
        clientDataJSON: encode(response.clientDataJSON),
        attestationObject: encode(response.attestationObject),
        transports: typeof response.getTransports === "function" ? response.getTransports() : [],
      },
      clientExtensionResults: extensionsForServer(credential.getClientExtensionResults()),
    };
  }

  function authenticationJson(credential) {
    const response = credential.response;
    return {
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      authenticatorAttachment: credential.authenticatorAttachment || null,
      response: {
        clientDataJSON: encode(response.clientDataJSON),
        authenticatorData: encode(response.authenticatorData),
        signature: encode(response.signature),
        userHandle: response.userHandle ? encode(response.userHandle) : null,
      },
      clientExtensionResults: extensionsForServer(credential.getClientExtensionResults()),
    };
  }

  function descriptors(list) {
    return (list || []).map(function (item) {
      return { type: item.type, id: decode(item.id), transports: item.transports };
    });
  }

  // Translate an exception of navigator.credentials into a code and plain words.
  function authenticatorError(error) {
    if (error instanceof PageError) {
      return error;
    }
    const name = error && error.name ? error.name : "Error";
    if (name === "NotAllowedError" || name === "AbortError") {
      return new PageError(
        "cancelled",
        "The passkey request was cancelled or took too long. Run the backvault command again to retry.",
      );
    }
    if (name === "InvalidStateError") {
      return new PageError("cancelled", "This passkey is already registered. Use another passkey.");
    }
    return new PageError(
      "unsupported",
      "Your browser could not use a passkey here (" + name + "). Try a recent Chrome, Edge, Safari or Firefox.",
    );
  }

  async function callAuthenticator(operation) {
    try {
      return await operation();
    } catch (error) {
      throw authenticatorError(error);
    }
  }

  function checkAddress(rpId) {
    const host = window.location.hostname;
    if (host !== rpId && !host.endsWith("." + rpId)) {
      throw new PageError(
        "unsupported",
        "This page was opened at the wrong address. Open the exact address that the backvault command printed.",
      );
    }
  }

  async function enrol(link, options) {
    checkAddress(options.rp.id);
    const prfSalt = decode(options.prf_salt);
    const publicKey = {
      rp: options.rp,
      user: Object.assign({}, options.user, { id: decode(options.user.id) }),
      challenge: decode(options.challenge),
      pubKeyCredParams: options.pubKeyCredParams,
      timeout: options.timeout,
      excludeCredentials: descriptors(options.excludeCredentials),
      authenticatorSelection: options.authenticatorSelection,
      attestation: options.attestation,
      extensions: { prf: { eval: { first: prfSalt } } },
    };
    show("working", "Follow your browser's instructions to create the passkey.");
    const created = await callAuthenticator(function () {
      return navigator.credentials.create({ publicKey: publicKey });
    });
    const createResults = created.getClientExtensionResults();
    if (!createResults.prf || createResults.prf.enabled !== true) {
      forgetCredential(options.rp.id, created.id);
      throw new PageError("no-prf", NO_PRF_TEXT);
    }
    const prfAtCreate =
      createResults.prf.results && createResults.prf.results.first
        ? encode(createResults.prf.results.first)
        : null;

    show("working", "Saving the passkey on the backup server…");
    await finishOnServer(link, registrationJson(created));

    // A second use of the new passkey checks that it returns its key, and gives the
    // command the key when the browser does not return one at creation.
    show("working", "Confirm once more, to check that the passkey works.");
    const checked = await callAuthenticator(function () {
      return navigator.credentials.get({
        publicKey: {
          challenge: crypto.getRandomValues(new Uint8Array(32)),
          rpId: options.rp.id,
          allowCredentials: [{ type: "public-key", id: created.rawId }],
          userVerification: "required",
          timeout: options.timeout,
          extensions: { prf: { eval: { first: prfSalt } } },
        },
      });
    }).catch(function (error) {
      error.credentialId = created.id;
      throw error;
    });
    const checkResults = checked.getClientExtensionResults();
    if (!checkResults.prf || !checkResults.prf.results || !checkResults.prf.results.first) {
      const error = new PageError("no-prf", NO_PRF_TEXT);
      error.credentialId = created.id;
      throw error;
    }
    return {
      kind: "register",
      credential_id: created.id,
      prf_create: prfAtCreate,
      prf: encode(checkResults.prf.results.first),
    };
  }

  // Ask the passkey provider to drop a passkey that cannot protect backups, where the
  // browser has the Signal API; elsewhere the useless passkey stays in the provider.
  function forgetCredential(rpId, credentialId) {
    const api = window.PublicKeyCredential;
    if (api && typeof api.signalUnknownCredential === "function") {
      api.signalUnknownCredential({ rpId: rpId, credentialId: credentialId }).catch(function () {
        // Nothing more to do: the page already shows that nothing was saved.
      });
    }
  }

  async function unlock(link, options) {
    checkAddress(options.rpId);
    const evalByCredential = {};
    for (const [credentialId, salt] of Object.entries(options.prf_salts)) {
      evalByCredential[credentialId] = { first: decode(salt) };
    }
    const publicKey = {
      challenge: decode(options.challenge),
      rpId: options.rpId,
      allowCredentials: descriptors(options.allowCredentials),
      userVerification: options.userVerification,
      timeout: options.timeout,
      extensions: { prf: { evalByCredential: evalByCredential } },
    };
    show("working", "Follow your browser's instructions to use your passkey.");
    const assertion = await callAuthenticator(function () {
      return navigator.credentials.get({ publicKey: publicKey });
    });
    const results = assertion.getClientExtensionResults();
    if (!results.prf || !results.prf.results || !results.prf.results.first) {
      throw new PageError(
        "no-prf",
        "This passkey did not return the key that opens your backups. Your browser or " +
          "passkey provider may not support the feature (called PRF) that backvault needs; " +
          "open the backups with the recovery key.",
      );
    }
    show("working", "Checking the passkey with the backup server…");
    await finishOnServer(link, authenticationJson(assertion));
    return { kind: "authenticate", credential_id: assertion.id, prf: encode(results.prf.results.first) };
  }

  async function reportFailure(link, options, error) {
    const failure = authenticatorError(error);
    show("error", failure.message + CLOSE_TEXT);
    const body = { error: failure.code, message: failure.message };
    if (error && error.credentialId) {
      // The server already stored this passkey; the command deletes it again.
      body.credential_id = error.credentialId;
    }
    try {
      await postToCommand(link, body);
    } catch (postError) {
      const rpId = options.rp ? options.rp.id : "";
      if (body.credential_id && (await undoEnrolment(link, rpId, body.credential_id))) {
        show("error", failure.message + " The new passkey was removed again.");
        return;
      }
      show("error", failure.message + " The backvault command could not be told; stop it with Ctrl-C.");
    }
  }

  async function run(link, options) {
    button.disabled = true;
    let result;
    try {
      result = pageKind === "enrol" ? await enrol(link, options) : await unlock(link, options);
    } catch (error) {
      await reportFailure(link, options, error);
      return;
    }
    show("working", "Handing the result to the backvault command…");
    try {
      await postToCommand(link, result);
    } catch (error) {
      let undone = "";
      if (result.kind === "register" && (await undoEnrolment(link, options.rp.id, result.credential_id))) {
        undone = " The new passkey was removed again, so nothing was saved.";
      }
      show(
        "error",
        "The backvault command on this computer did not take the result." + undone +
          " Check that the command is still running, then run it again.",
      );
      return;
    }
    show("done", DONE_TEXT[pageKind] || DONE_TEXT.unlock);
  }

  async function start() {
    const link = readFragment();
    // The state is a one-time secret: keep it out of the browser's history.
    window.history.replaceState(null, "", window.location.pathname);
    if (!CEREMONY_PATTERN.test(link.ceremony) || link.port === null || !link.state) {
      show("error", "This address is incomplete. Copy the whole address that the backvault command printed.");
      return;
    }
    if (!window.isSecureContext || !window.PublicKeyCredential || !navigator.credentials) {
      await reportFailure(link, {}, new PageError(
        "unsupported",
        "This browser cannot use passkeys here. Open the address in a recent Chrome, Edge, Safari or Firefox.",
      ));
      return;
    }
    let ceremony;
    try {
      ceremony = await fetchOptions(link);
      if (ceremony.kind !== (pageKind === "enrol" ? "register" : "authenticate")) {
        throw new PageError("server", "This address belongs to the other passkey page. Open the exact address that the backvault command printed.");
      }
    } catch (error) {
      await reportFailure(link, {}, error);
      return;
    }
    button.addEventListener("click", function () {
      run(link, ceremony.options);
    });
    button.disabled = false;
    show("ready", "Ready. Press the button to continue.");
  }

  // Opening a new address that differs only in its fragment does not load the page again,
  // so a new ceremony in the same tab starts over from here.
  window.addEventListener("hashchange", function () {
    window.location.reload();
  });
  start();
})();
