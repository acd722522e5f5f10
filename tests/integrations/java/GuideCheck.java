// GuideCheck.java - drives the Spring Boot guide's KeybrakeAdmin and
// KeybrakeRefusal (extracted from docs/integrations/spring-boot.md by
// java.test.js) against the real binary. One JVM per test file: it reads
// commands from stdin, one JSON array of strings a line, and answers each
// with one JSON line of what happened. KB_ADMIN_URL, KB_ADMIN_TOKEN and
// KB_PROXY_URL come from the environment.
//
//   issue <vendor> <dailyUsdCap> <expiresIn> <endpoint>   {"id","token","label"}
//   revoke <id>                                           {"revoked":true} or the refusal
//   revoke-prefix <prefix>                                {"revoked":n}
//   chat <vaultToken>   a chat completion through the proxy: {"status":200} or the refusal

import com.example.keybrake.KeybrakeAdmin;
import com.example.keybrake.KeybrakeRefusal;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

public final class GuideCheck {
    private static final ObjectMapper JSON = new ObjectMapper();

    public static void main(String[] argv) throws Exception {
        KeybrakeAdmin kb = new KeybrakeAdmin(System.getenv("KB_ADMIN_URL"), System.getenv("KB_ADMIN_TOKEN"));
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, "UTF-8"));
        for (String line; (line = in.readLine()) != null; ) {
            String[] args = JSON.readValue(line, String[].class);
            System.out.println(JSON.writeValueAsString(command(kb, args)));
            System.out.flush();
        }
    }

    private static Map<String, Object> command(KeybrakeAdmin kb, String[] args) throws Exception {
        Map<String, Object> out = new LinkedHashMap<>();
        try {
            switch (args[0]) {
                case "issue" -> {
                    KeybrakeAdmin.VaultKey k = kb.issue(
                            "java-" + System.nanoTime() + "/run", args[1], List.of(args[4]), args[2], args[3]);
                    out.put("id", k.id());
                    out.put("token", k.token());
                    out.put("label", k.label());
                    out.put("toString", k.toString());
                }
                case "revoke" -> {
                    kb.revoke(args[1]);
                    out.put("revoked", true);
                }
                case "revoke-prefix" -> out.put("revoked", kb.revokePrefix(args[1]));
                case "chat" -> {
                    HttpResponse<String> res = HttpClient.newHttpClient().send(
                            HttpRequest.newBuilder(URI.create(System.getenv("KB_PROXY_URL") + "/openai/v1/chat/completions"))
                                    .header("Authorization", "Bearer " + args[1])
                                    .header("Content-Type", "application/json")
                                    .POST(HttpRequest.BodyPublishers.ofString(
                                            "{\"model\":\"gpt-4o-mini\",\"max_tokens\":1000,"
                                                    + "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}"))
                                    .build(),
                            HttpResponse.BodyHandlers.ofString());
                    out.put("status", res.statusCode());
                    if (res.statusCode() >= 300) {
                        KeybrakeRefusal r = KeybrakeRefusal.of(res.statusCode(), n -> res.headers().firstValue(n), res.body());
                        if (r != null) throw r;
                        out.put("vendor", true);
                    }
                }
                default -> throw new IllegalArgumentException("unknown command " + args[0]);
            }
        } catch (KeybrakeRefusal r) {
            out.put("status", r.status);
            out.put("code", r.code);
            out.put("spent", r.isSpendExhausted());
            out.put("retryable", r.isRetryable());
            out.put("retryAfter", r.retryAfterSeconds.isPresent() ? r.retryAfterSeconds.getAsLong() : null);
        }
        return out;
    }
}
