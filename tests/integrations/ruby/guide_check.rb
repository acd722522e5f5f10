# guide_check.rb - drives the Rails guide's lib/keybrake.rb (extracted from
# docs/integrations/rails.md by ruby.test.js; its path is ARGV[0]) against
# the real binary. Reads commands from stdin, one JSON array of strings a
# line, and answers each with one JSON line of what happened.
# KB_ADMIN_URL, KB_ADMIN_TOKEN and KB_PROXY_URL come from the environment.
#
#   issue <vendor> <daily_usd_cap> <expires_in> <endpoint>  {"id","token","label","inspect"}
#   revoke <id>                                             {"revoked":true} or the refusal
#   revoke-prefix <prefix>                                  {"revoked":n}
#   chat <vault token>        a chat completion through the proxy: {"status":200} or the refusal
#   with-key <ok|raise>       with_key around a block that returns or raises: {"id","result"|"raised"}

require File.expand_path(ARGV.fetch(0))
require "json"
require "net/http"

$stdout.sync = true
kb = Keybrake::Client.new(admin_url: ENV.fetch("KB_ADMIN_URL"), admin_token: ENV.fetch("KB_ADMIN_TOKEN"))
proxy = URI(ENV.fetch("KB_PROXY_URL"))

def refusal(e)
  { status: e.status, code: e.code, spent: e.spend_exhausted?, retryable: e.retryable?,
    retry_after: e.retry_after }
end

$stdin.each_line do |line|
  cmd, *args = JSON.parse(line)
  out =
    begin
      case cmd
      when "issue"
        k = kb.issue(label: "ruby-#{Process.clock_gettime(Process::CLOCK_REALTIME, :nanosecond)}/run",
                     vendor: args[0], allowed_endpoints: [args[3]],
                     daily_usd_cap: Float(args[1]), expires_in: args[2])
        { id: k.id, token: k.token, label: k.label, inspect: k.inspect, client: kb.inspect }
      when "revoke"
        kb.revoke(args[0])
        { revoked: true }
      when "revoke-prefix"
        { revoked: kb.revoke_prefix(args[0]) }
      when "chat"
        req = Net::HTTP::Post.new("/openai/v1/chat/completions")
        req["Authorization"] = "Bearer #{args[0]}"
        req["Content-Type"] = "application/json"
        req.body = JSON.generate(model: "gpt-4o-mini", max_tokens: 1000,
                                 messages: [{ role: "user", content: "hi" }])
        res = Net::HTTP.start(proxy.host, proxy.port, use_ssl: proxy.scheme == "https") { |h| h.request(req) }
        if res.is_a?(Net::HTTPSuccess)
          { status: res.code.to_i }
        else
          e = Keybrake::Error.from(res.code.to_i, res, res.body)
          e ? refusal(e) : { status: res.code.to_i, vendor: true }
        end
      when "with-key"
        seen = nil
        begin
          result = kb.with_key(label: "ruby-with/run", vendor: "openai",
                               allowed_endpoints: ["POST /v1/chat/completions"], daily_usd_cap: 1) do |key|
            seen = key
            raise ArgumentError, "tool failed" if args[0] == "raise"
            42
          end
          { id: seen.id, result: result }
        rescue ArgumentError => e
          { id: seen&.id, raised: e.message }
        end
      else
        raise "unknown command #{cmd}"
      end
    rescue Keybrake::Error => e
      refusal(e)
    end
  puts JSON.generate(out)
end
